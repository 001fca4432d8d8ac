"""Send windows in each subscriber's own time zone: odd offsets, DST, weekends, bad names."""

import datetime
import zoneinfo

from funnels.sequences.windows import Window, in_window, next_opening, zone_for

UTC = datetime.UTC
DAY = Window(start=datetime.time(6, 0), end=datetime.time(22, 0))


def at(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text).replace(tzinfo=UTC)


def local(instant: datetime.datetime, zone: str) -> str:
    return instant.astimezone(zoneinfo.ZoneInfo(zone)).strftime("%a %Y-%m-%d %H:%M %z")


def test_a_send_due_inside_the_window_goes_at_once():
    due = at("2026-03-02 12:00")  # 14:00 in Helsinki
    assert next_opening(due, zoneinfo.ZoneInfo("Europe/Helsinki"), DAY) == due


def test_a_send_due_at_night_waits_for_six_in_the_morning_in_kathmandu():
    due = at("2026-03-02 17:00")  # 22:45 in Kathmandu (+05:45)
    opening = next_opening(due, zoneinfo.ZoneInfo("Asia/Kathmandu"), DAY)
    assert local(opening, "Asia/Kathmandu") == "Tue 2026-03-03 06:00 +0545"
    assert opening == at("2026-03-03 00:15")


def test_tehran_half_hour_offset_opens_at_local_six():
    due = at("2026-06-10 00:00")  # 03:30 in Tehran (+03:30, no DST since 2022)
    opening = next_opening(due, zoneinfo.ZoneInfo("Asia/Tehran"), DAY)
    assert local(opening, "Asia/Tehran") == "Wed 2026-06-10 06:00 +0330"


def test_window_edges_are_start_inclusive_and_end_exclusive():
    zone = zoneinfo.ZoneInfo("Asia/Tehran")
    assert in_window(at("2026-06-10 02:30"), zone, DAY)  # 06:00 local
    assert not in_window(at("2026-06-10 18:30"), zone, DAY)  # 22:00 local
    assert in_window(at("2026-06-10 18:29"), zone, DAY)


def test_spring_forward_night_still_opens_at_six_local_time():
    # New York skips 02:00-03:00 on 8 March 2026; the opening is 06:00 EDT (-04:00).
    due = at("2026-03-08 04:00")  # 23:00 EST on the 7th
    opening = next_opening(due, zoneinfo.ZoneInfo("America/New_York"), DAY)
    assert local(opening, "America/New_York") == "Sun 2026-03-08 06:00 -0400"
    assert opening == at("2026-03-08 10:00")


def test_fall_back_night_opens_once_at_six_local_time():
    due = at("2026-10-24 21:00")  # 00:00 in Helsinki, the night clocks go back
    opening = next_opening(due, zoneinfo.ZoneInfo("Europe/Helsinki"), DAY)
    assert local(opening, "Europe/Helsinki") == "Sun 2026-10-25 06:00 +0200"


def test_a_window_whose_start_falls_in_a_dst_gap_opens_just_after_the_jump():
    # Chile's clocks jump from 00:00 to 01:00 on 6 September 2026: a window starting at
    # midnight local would not exist, but ours never start before 06:00. A 00:30 start
    # is still handled (built directly, bypassing the model's validation).
    window = Window(start=datetime.time(0, 30), end=datetime.time(22, 0))
    zone = zoneinfo.ZoneInfo("America/Santiago")
    opening = next_opening(at("2026-09-06 02:00"), zone, window)
    assert in_window(opening, zone, window)
    assert local(opening, "America/Santiago") == "Sun 2026-09-06 01:30 -0300"


def test_weekdays_only_moves_a_saturday_send_to_monday_morning():
    window = Window(start=datetime.time(9, 0), end=datetime.time(17, 0), weekdays_only=True)
    due = at("2026-03-07 10:00")  # Saturday
    opening = next_opening(due, zoneinfo.ZoneInfo("Europe/Helsinki"), window)
    assert local(opening, "Europe/Helsinki") == "Mon 2026-03-09 09:00 +0200"


def test_no_opening_is_ever_between_ten_at_night_and_six_in_the_morning():
    for zone_name in ("Asia/Kathmandu", "Asia/Tehran", "America/St_Johns", "Pacific/Chatham"):
        zone = zoneinfo.ZoneInfo(zone_name)
        for hour in range(0, 24 * 7, 5):
            opening = next_opening(
                at("2026-03-01 00:17") + datetime.timedelta(hours=hour), zone, DAY
            )
            assert datetime.time(6, 0) <= opening.astimezone(zone).time() < datetime.time(22, 0)


def test_an_unknown_time_zone_falls_back_to_the_given_default_then_utc():
    assert zone_for("Mars/Olympus_Mons", fallback="Asia/Tehran") == zoneinfo.ZoneInfo("Asia/Tehran")
    assert zone_for("../../etc/passwd", fallback="Nowhere/Else") == zoneinfo.ZoneInfo("UTC")
    assert zone_for("", fallback=None) == zoneinfo.ZoneInfo("UTC")
