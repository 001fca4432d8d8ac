"""Send-window arithmetic in each subscriber's own time zone.

A window is [start, end) local wall-clock time, optionally Monday to Friday only. Moving
an instant into a window works on local dates and converts each candidate opening back
to UTC through zoneinfo, so DST gaps, repeated hours and odd offsets (Asia/Kathmandu
+05:45, Asia/Tehran +03:30) come out right without special cases.
"""

import datetime
import zoneinfo
from dataclasses import dataclass
from functools import lru_cache

from django.conf import settings

UTC = datetime.UTC


@dataclass(frozen=True)
class Window:
    start: datetime.time
    end: datetime.time
    weekdays_only: bool = False

    @classmethod
    def of(cls, obj) -> "Window":
        return cls(start=obj.window_start, end=obj.window_end, weekdays_only=obj.weekdays_only)


@lru_cache(maxsize=1024)
def _zone(name: str) -> zoneinfo.ZoneInfo | None:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
        return None


def zone_for(name: str | None, *, fallback: str | None = None) -> zoneinfo.ZoneInfo:
    """The subscriber's zone; an unknown or empty name falls back to the brand's default
    zone, then the site's, then UTC — a bad value never stops a send."""
    for candidate in (name, fallback, settings.TIME_ZONE):
        zone = _zone(candidate) if candidate else None
        if zone is not None:
            return zone
    return zoneinfo.ZoneInfo("UTC")


def _allowed_day(day: datetime.date, window: Window) -> bool:
    return not window.weekdays_only or day.weekday() < 5


def _local(day: datetime.date, at: datetime.time, zone: zoneinfo.ZoneInfo) -> datetime.datetime:
    # fold=0: in a repeated hour the first occurrence; in a skipped hour the wall time is
    # read with the offset before the jump, which lands just after it — still in the window.
    return datetime.datetime.combine(day, at, tzinfo=zone).astimezone(UTC)


def in_window(instant: datetime.datetime, zone: zoneinfo.ZoneInfo, window: Window) -> bool:
    local = instant.astimezone(zone)
    return _allowed_day(local.date(), window) and window.start <= local.time() < window.end


def next_opening(
    instant: datetime.datetime, zone: zoneinfo.ZoneInfo, window: Window
) -> datetime.datetime:
    """``instant`` itself when it is inside the window, else the next moment the window
    opens in ``zone`` (UTC-aware)."""
    if in_window(instant, zone, window):
        return instant.astimezone(UTC)
    local = instant.astimezone(zone)
    day = local.date()
    if local.time() >= window.start:
        day += datetime.timedelta(days=1)
    for _ in range(8):  # at most a weekend plus a day
        if _allowed_day(day, window):
            opening = _local(day, window.start, zone)
            if opening > instant and in_window(opening, zone, window):
                return opening
        day += datetime.timedelta(days=1)
    raise ValueError(f"No opening of {window} in {zone} within a week of {instant}")
