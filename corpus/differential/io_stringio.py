# name: StringIO and BytesIO as in-memory files
import io
f = io.StringIO()
f.write("first line\n")
print("second line", file=f)
f.writelines(["third\n", "fourth"])
f.seek(0)
print(repr(f.readline()), repr(f.read(6)), f.tell())
f.seek(0)
print([line.rstrip() for line in f])
print(repr(f.getvalue()))
r = io.StringIO(context)
header = [r.readline().rstrip("\n") for _ in range(3)]
print(header)
b = io.BytesIO(b"\x00\x01binary")
print(b.read(2), b.read(), b.getbuffer().nbytes)
