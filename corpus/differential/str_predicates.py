# name: str predicates, casefold and splitlines
samples = ["123", "12.5", "abc", "abc123", "   ", "", "Hello World", "snake_case_name", "3rd", "ÀÉÎ", "٣"]
for s in samples:
    print(repr(s), s.isdigit(), s.isdecimal(), s.isnumeric(), s.isalpha(), s.isalnum(), s.isspace(),
          s.isidentifier(), s.istitle(), s.isupper(), s.islower())
print("Straße".casefold(), "Straße".lower(), "Straße".upper())
print("Hello".swapcase(), "a\tb\tc".expandtabs(4), repr("x\ty".expandtabs()))
print("one\ntwo\r\nthree\rfour".splitlines())
print("one\ntwo\n".splitlines(keepends=True))
print("line1\n\nline3".split("\n"))
