# name: array module and bit manipulation
from array import array
a = array("i", [5, -3, 12, 7])
a.append(100)
a.extend([1, 2])
print(a, a.tolist(), a.itemsize * 0 + len(a), a.index(12), sum(a))
b = array("d", [0.5, 0.25])
print(b, b.tobytes().hex())
flags = 0
for bit in [0, 3, 5]:
    flags |= 1 << bit
print(bin(flags), flags & (1 << 3) != 0, flags >> 2, ~flags, flags ^ 0xFF, f"{flags:08b}")
print([n for n in range(20) if n & (n - 1) == 0])
