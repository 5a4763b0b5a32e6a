# name: calendar text and date helpers
import calendar
print(calendar.isleap(2024), calendar.leapdays(2000, 2025), tuple(map(int, calendar.monthrange(2024, 2))))
print(calendar.TextCalendar(calendar.MONDAY).formatmonth(2024, 3))
print(calendar.weekday(2024, 3, 21), calendar.day_name[calendar.weekday(2024, 3, 21)])
print(list(calendar.month_abbr)[1:4], calendar.monthcalendar(2024, 2)[0])
