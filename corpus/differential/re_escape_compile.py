# name: re.escape, compiled pattern attributes, lookarounds
import re
literal = "price: $5.00 (approx.) [USD]"
pattern = re.compile(re.escape("$5.00 (approx.)"))
print(pattern.search(literal).span())
print(re.escape("a.b*c"))
p = re.compile(r"(?<=\$)\d+(?:\.\d\d)?")
print(p.findall("cost $12.50, tax $1, total $13.50"))
print(re.findall(r"\w+(?=ing\b)", "running jumping sing thing"))
print(re.findall(r"\b(?!un)\w+able\b", "unable capable unstable readable"))
print(p.pattern, p.flags & re.UNICODE != 0)
print(re.findall(r"(a|b)+", "abab ba"), re.findall(r"(?:a|b)+", "abab ba"))
print(re.sub(r"(\w+) (\w+)", r"\2 \1", "hello world"))
print(re.findall(r".", "é東🚀"))
