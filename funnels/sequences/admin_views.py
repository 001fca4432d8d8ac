"""The creator's side of sequences and broadcasts in the Wagtail admin: the per-step
report (figures, advice, chart), pause/resume, preview with a sample subscriber, a test
send to oneself, and a subscriber's timeline. Writes go through services."""

from dataclasses import dataclass

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.generic import TemplateView, View
from wagtail.admin.views import generic
from wagtail.permissions import policy_registry
from wagtail.snippets.views import snippets as snippet_views

from core.admin_reports import fmt_int, fmt_pct, nice_scale
from core.services import brand_settings, email_enqueue
from funnels.admin_views import can_see_subscribers
from funnels.models import Broadcast, Sequence, SequenceStep, Subscriber
from funnels.models_sequences import SHORT_SUBJECT
from funnels.services import manage_url, unsubscribe_url

from . import rendering, selectors, services


def _can_edit_sequences(user) -> bool:
    return policy_registry.get_by_type(Sequence).user_has_any_permission(user, ["change"])


def _can_view_sequences(user) -> bool:
    return policy_registry.get_by_type(Sequence).user_has_any_permission(user, ["view", "change"])


def sample_subscriber(request, pk: str | None = None) -> Subscriber:
    if pk and pk.isdigit():
        found = Subscriber.objects.filter(pk=int(pk)).first()
        if found is not None:
            return found
    user = request.user
    return Subscriber(
        name=(user.get_full_name() or "Sam Sample").strip(),
        email=user.email or "sam@example.com",
        time_zone=brand_settings().default_time_zone,
        status=Subscriber.Status.CONFIRMED,
    )


def render_for(source, subscriber: Subscriber) -> rendering.Message:
    """A step or broadcast as ``subscriber`` would get it (links not tracked)."""
    brand = brand_settings()
    return rendering.render_message(
        rendering.compile_email(source),
        layout=rendering.Layout.build(brand=brand),
        values=rendering.values_for(subscriber, brand),
        track=lambda url: url,
        unsubscribe_url=unsubscribe_url(subscriber) if subscriber.pk else "#unsubscribe",
        manage_url=manage_url(subscriber) if subscriber.pk else "#your-data",
    )


# --- Chart geometry (drawn by the template as inline SVG) ------------------------------------


@dataclass(frozen=True)
class StepBar:
    label: str
    y: float
    sent_width: float
    clicked_width: float
    converted_width: float
    text: str
    text_x: float


@dataclass(frozen=True)
class StepChart:
    width: int
    height: int
    plot_x: int
    plot_width: int
    bars: list
    ticks: list
    desc: str


def step_chart(figures: list[selectors.StepFigures]) -> StepChart | None:
    if not figures:
        return None
    width, plot_x, room, bar_h, gap, top = 800, 220, 140, 22, 14, 16
    plot_width = width - plot_x - room
    axis_max, step = nice_scale(max((f.sent for f in figures), default=0) or 1)
    bars = []
    for i, f in enumerate(figures):
        y = top + i * (bar_h + gap)

        def w(value):
            return round(plot_width * value / axis_max, 1)

        bars.append(
            StepBar(
                label=f"{i + 1}. {f.step.subject[:28]}",
                y=y,
                sent_width=max(w(f.sent), 1.5),
                clicked_width=w(f.clicked),
                converted_width=w(f.converted),
                text=f"{fmt_int(f.sent)} · {fmt_pct(f.click_rate)} · {fmt_int(f.converted)}",
                text_x=round(plot_x + w(f.sent) + 6, 1),
            )
        )
    ticks = [
        (round(plot_x + plot_width * v / axis_max, 1), fmt_int(v))
        for v in range(0, axis_max + 1, step)
    ]
    desc = " ".join(
        _("Step %(n)s: %(sent)s sent, %(clicked)s clicked, %(converted)s bought.")
        % {
            "n": i + 1,
            "sent": fmt_int(f.sent),
            "clicked": fmt_int(f.clicked),
            "converted": fmt_int(f.converted),
        }
        for i, f in enumerate(figures)
    )
    return StepChart(
        width=width,
        height=top + len(figures) * (bar_h + gap) + 24,
        plot_x=plot_x,
        plot_width=plot_width,
        bars=bars,
        ticks=ticks,
        desc=desc,
    )


# --- Views ---------------------------------------------------------------------------------


class _AdminTemplateView(generic.WagtailAdminTemplateMixin, TemplateView):
    header_icon = "mail"

    def dispatch(self, request, *args, **kwargs):
        if not _can_view_sequences(request.user):
            raise PermissionDenied
        return super().dispatch(request, *args, **kwargs)

    def get_breadcrumbs_items(self):
        return [*self.breadcrumbs_items, {"url": "", "label": self.get_page_title()}]


class SequenceReportView(_AdminTemplateView):
    template_name = "funnels/sequences/admin/report.html"

    def get_page_title(self):
        return self.sequence.name

    def get_page_subtitle(self):
        return _("Sequence report")

    def dispatch(self, request, *args, pk, **kwargs):
        self.sequence = get_object_or_404(Sequence, pk=pk)
        return super().dispatch(request, *args, **kwargs)

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        figures = selectors.step_figures(self.sequence)
        context.update(
            sequence=self.sequence,
            figures=figures,
            chart=step_chart(figures),
            counts=selectors.enrolment_counts(self.sequence),
            warnings=selectors.sequence_warnings(self.sequence, [f.step for f in figures]),
            short_subject=SHORT_SUBJECT,
            can_edit=_can_edit_sequences(self.request.user),
            edit_url=reverse("wagtailsnippets_funnels_sequence:edit", args=[self.sequence.pk]),
        )
        return context


class SequencePauseView(View):
    http_method_names = ["post"]
    pause = True

    def post(self, request, pk):
        if not _can_edit_sequences(request.user):
            raise PermissionDenied
        sequence = get_object_or_404(Sequence, pk=pk)
        if self.pause:
            services.sequence_pause(sequence=sequence)
            messages.success(
                request,
                _("“%(name)s” is paused: no email of it goes out.") % {"name": sequence.name},
            )
        else:
            services.sequence_resume(sequence=sequence)
            messages.success(request, _("“%(name)s” is sending again.") % {"name": sequence.name})
        return redirect("funnels_sequences:report", pk=sequence.pk)


class PreviewView(_AdminTemplateView):
    """A step or broadcast as a chosen (or sample) subscriber would get it."""

    template_name = "funnels/sequences/admin/preview.html"
    kind = "step"

    def dispatch(self, request, *args, pk, **kwargs):
        model = SequenceStep if self.kind == "step" else Broadcast
        self.source = get_object_or_404(model, pk=pk)
        return super().dispatch(request, *args, **kwargs)

    def get_page_title(self):
        return _("Preview: %(subject)s") % {"subject": self.source.subject}

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        subscriber = sample_subscriber(self.request, self.request.GET.get("subscriber"))
        try:
            message, error = render_for(self.source, subscriber), None
        except rendering.RenderError as exc:
            message, error = None, str(exc)
        back = (
            reverse("funnels_sequences:report", args=[self.source.sequence_id])
            if self.kind == "step"
            else reverse("funnels_broadcasts:edit", args=[self.source.pk])
        )
        context.update(
            source=self.source,
            subscriber=subscriber,
            message=message,
            error=error,
            back_url=back,
            test_url=reverse(f"funnels_sequences:test_{self.kind}", args=[self.source.pk]),
            recent=Subscriber.objects.filter(status=Subscriber.Status.CONFIRMED)[:20],
        )
        return context


class TestSendView(View):
    """Send the step or broadcast to the creator's own address, through the outbox."""

    http_method_names = ["post"]
    kind = "step"

    def post(self, request, pk):
        if not _can_view_sequences(request.user):
            raise PermissionDenied
        model = SequenceStep if self.kind == "step" else Broadcast
        source = get_object_or_404(model, pk=pk)
        back = reverse(f"funnels_sequences:preview_{self.kind}", args=[pk])
        if not request.user.email:
            messages.error(request, _("Your account has no email address to send the test to."))
            return redirect(back)
        subscriber = sample_subscriber(request, request.POST.get("subscriber"))
        try:
            message = render_for(source, subscriber)
        except rendering.RenderError as exc:
            messages.error(request, _("The email cannot be rendered: %(error)s") % {"error": exc})
            return redirect(back)
        email_enqueue(
            to=request.user.email,
            subject=f"[Test] {message.subject}",
            text_body=message.text,
            html_body=message.html,
            kind="sequences:test",
        )
        messages.success(request, _("Test sent to %(email)s.") % {"email": request.user.email})
        return redirect(back)


class BroadcastSendView(View):
    http_method_names = ["post"]
    cancel = False

    def post(self, request, pk):
        if not policy_registry.get_by_type(Broadcast).user_has_permission(request.user, "change"):
            raise PermissionDenied
        broadcast = get_object_or_404(Broadcast, pk=pk)
        if self.cancel:
            services.broadcast_cancel(broadcast=broadcast)
            messages.success(request, _("Broadcast cancelled; emails not yet sent are withdrawn."))
        else:
            try:
                services.broadcast_schedule(broadcast=broadcast)
            except services.SequenceError as exc:
                messages.error(request, str(exc))
            else:
                messages.success(
                    request,
                    _(
                        "Broadcast on its way: %(n)s subscribers match. Each gets it when the "
                        "send window opens in their time zone."
                    )
                    % {"n": fmt_int(selectors.broadcast_audience(broadcast).count())},
                )
        return redirect("funnels_broadcasts:edit", pk)


class TimelineView(_AdminTemplateView):
    template_name = "funnels/sequences/admin/timeline.html"
    page_title = gettext_lazy("Subscriber timeline")

    def dispatch(self, request, *args, **kwargs):
        if not can_see_subscribers(request.user):
            raise PermissionDenied
        return super().dispatch(request, *args, **kwargs)

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        pk = self.kwargs.get("pk")
        query = (self.request.GET.get("email") or "").strip()
        subscriber = None
        if pk is not None:
            subscriber = get_object_or_404(Subscriber, pk=pk)
        elif query:
            subscriber = Subscriber.objects.filter(email__iexact=query).first()
            if subscriber is None:
                context["not_found"] = query
        if pk is not None and subscriber is None:
            raise Http404
        context.update(
            subscriber=subscriber,
            query=query,
            entries=selectors.subscriber_timeline(subscriber) if subscriber else [],
            enrolments=(
                subscriber.enrolments.select_related("sequence", "next_step") if subscriber else []
            ),
        )
        return context


class _WarnAfterSave:
    """After a save: enrolments whose next step was deleted move on, and the creator sees
    the sequence's advice at once."""

    def save_instance(self):
        instance = super().save_instance()
        services.sequence_steps_reconcile(sequence=instance)
        return instance

    def get_success_message(self, *args, **kwargs):
        message = super().get_success_message(*args, **kwargs)
        instance = getattr(self, "object", None) or (args[0] if args else None)
        if instance is not None:
            for warning in selectors.sequence_warnings(instance):
                messages.warning(self.request, warning.message)
        return message


class SequenceEditView(_WarnAfterSave, snippet_views.EditView):
    pass


class SequenceCreateView(_WarnAfterSave, snippet_views.CreateView):
    pass
