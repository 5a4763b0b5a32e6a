# name: struct pack/unpack and memoryview
import struct
packed = struct.pack("<IhB3s", 123456, -2, 255, b"abc")
print(packed, len(packed), struct.calcsize("<IhB3s"), struct.calcsize("@ihb"))
print(struct.unpack("<IhB3s", packed))
print(struct.pack(">d", 1.5).hex(), struct.unpack(">f", bytes.fromhex("3fc00000")))
records = b"".join(struct.pack("<HH", i, i * i) for i in range(5))
print([t for t in struct.iter_unpack("<HH", records)])
mv = memoryview(bytearray(b"abcdef"))
mv[1:3] = b"XY"
print(mv.tobytes(), mv[::2].tobytes(), len(mv))
