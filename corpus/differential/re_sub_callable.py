# name: re.sub with functions, backreferences and counts
import re
text = "Call 555-1234 or 555-9876; fax 555-0000. Dates: 2024-03-15, 2023-12-01."
print(re.sub(r"\d{3}-\d{4}", "XXX-XXXX", text))
print(re.sub(r"(\d{4})-(\d{2})-(\d{2})", r"\3/\2/\1", text))
print(re.sub(r"(?P<y>\d{4})-(?P<m>\d{2})", r"\g<m>.\g<y>", text))
print(re.sub(r"\d+", lambda m: str(int(m.group()) * 2), "a1 b22 c333"))
print(re.sub(r"\s+", " ", "too    many\t\tspaces\n\nhere"))
print(re.subn(r"555", "777", text))
print(re.sub(r"o", "0", "foo boo zoo", count=2))
def title_case(m):
    return m.group(1).upper() + m.group(2).lower()
print(re.sub(r"\b(\w)(\w*)", title_case, "hELLO wORLD from PYTHON"))
print(re.sub(r"(?i)error", "E", "Error ERROR error"))
