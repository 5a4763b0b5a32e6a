# name: unicode normalization and accent stripping
import unicodedata
s = "Café naïve façade jalapeño Ångström"
nfd = unicodedata.normalize("NFD", s)
print(len(s), len(nfd), unicodedata.normalize("NFC", nfd) == s)
print("".join(c for c in nfd if not unicodedata.combining(c)))
for ch in "é東🚀ß٣":
    print(ch, hex(ord(ch)), unicodedata.name(ch), unicodedata.category(ch))
print(unicodedata.numeric("٣"), unicodedata.decimal("٣"), int("٣٤"))
print("ﬁ".upper(), unicodedata.normalize("NFKC", "ﬁ ①"), "Ⅻ".lower())
print(sorted(["é", "e", "f", "z", "É"]))
