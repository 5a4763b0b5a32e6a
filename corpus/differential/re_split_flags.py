# name: re.split and flags (IGNORECASE, MULTILINE, DOTALL, VERBOSE)
import re
print(re.split(r"[,;]\s*", "a, b;c,  d"))
print(re.split(r"([,;])", "a,b;c"))
print(re.split(r"\s+", "  lead and trail  "))
print(re.split(r",", "a,b,c,d", maxsplit=2))
print(re.findall(r"^\w+", "first line\nsecond line\nthird", re.MULTILINE))
print(re.findall(r"^\w+", "first line\nsecond line"))
print(re.search(r"start.*end", "start\nmiddle\nend", re.DOTALL).group())
print(re.search(r"start.*end", "start\nmiddle\nend"))
print(re.findall(r"python", "Python PYTHON python", re.IGNORECASE))
phone = re.compile(r"""
    (\d{3})   # area
    [-.\s]?
    (\d{4})   # number
""", re.VERBOSE)
print(phone.findall("555-1234 and 555.9999 and 5551111"))
print(re.findall(r"\bcat\b", "cat concat cat's scatter"))
print(re.findall(r"(\w+)@(\w+)\.org", context))
print(bool(re.fullmatch(r"[A-Z]{3}-\d+", "ABC-123")), bool(re.fullmatch(r"[A-Z]{3}-\d+", "ABC-123x")))
