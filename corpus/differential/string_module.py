# name: string constants, Template and capwords
import string
print(string.ascii_lowercase, string.ascii_uppercase, string.digits)
print(string.punctuation, string.hexdigits, repr(string.whitespace))
t = string.Template("$who likes $what; ${who}'s cost: $$5")
print(t.substitute(who="Tim", what="kung pao"))
print(t.safe_substitute(who="Ann"))
try:
    t.substitute(who="x")
except KeyError as exc:
    print("missing", exc)
print(string.capwords("hello   wide world"), string.capwords("a-b-c", "-"))
table = str.maketrans({c: None for c in string.punctuation})
print("Hello, world! (test) #1".translate(table))
print("abc".translate(str.maketrans("abc", "xyz")))
formatter = string.Formatter()
print([t[1] for t in formatter.parse("{a} and {b:>4} {c!r}")])
