# name: base64, binascii and zlib round trips
import base64, binascii, zlib
raw = "RLM ✓ context".encode()
print(base64.b64encode(raw), base64.urlsafe_b64encode(b"\xfb\xff"), base64.b32encode(b"abc"), base64.b16encode(b"hi"))
print(base64.b64decode(base64.b64encode(raw)).decode())
print(binascii.hexlify(b"\x00\xffab", "-"), binascii.crc32(b"hello"), zlib.adler32(b"hello"))
packed = zlib.compress(context.encode())
print(zlib.decompress(packed).decode() == context, len(packed) < len(context))
print(zlib.crc32(context.encode()))
