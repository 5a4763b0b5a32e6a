# name: repr of strings and bytes with quotes, escapes and unicode
values = ["plain", "it's", 'say "hi"', "both ' and \"", "tab\there", "new\nline", "back\\slash", "é東🚀", "\x00\x07\x7f",
          "\u200b zero width", b"bytes\x00\xff", b"it's", bytearray(b"ba"), "\r\n"]
for v in values:
    print(repr(v), ascii(v) if isinstance(v, str) else "")
print(str(["a", "b'c"]), str({"k": "v\n"}), str(("t",)))
