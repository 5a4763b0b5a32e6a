# name: CJK and emoji strings: lengths, slicing, encodings
cjk = "東京は日本の首都です"
emoji = "👩‍💻🚀🇫🇷👍🏽"
print(len(cjk), len(cjk.encode()), cjk[2:5], cjk[::-1])
print(len(emoji), len(emoji.encode("utf-8")), len(emoji.encode("utf-16-le")) // 2)
print([hex(ord(c)) for c in emoji])
print(emoji[:3], repr(emoji[0]))
mixed = "abc東京🚀"
print(mixed.upper(), mixed.isalpha(), [c.isalpha() for c in mixed])
print(f"[{cjk:^14}]", f"[{'🚀':>3}]")
print("ß".upper(), "ǅ".lower(), "İ".lower(), len("İ".lower()))
print("東京" in context, context.count("🚀"), "Москва" in context)
