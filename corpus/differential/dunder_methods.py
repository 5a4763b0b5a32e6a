# name: container and operator dunder methods
class Vector:
    def __init__(self, *xs):
        self.xs = list(xs)
    def __repr__(self):
        return f"Vector({', '.join(map(str, self.xs))})"
    def __len__(self):
        return len(self.xs)
    def __getitem__(self, i):
        return self.xs[i]
    def __iter__(self):
        return iter(self.xs)
    def __contains__(self, x):
        return x in self.xs
    def __add__(self, other):
        return Vector(*(a + b for a, b in zip(self, other)))
    def __mul__(self, k):
        return Vector(*(a * k for a in self))
    __rmul__ = __mul__
    def __eq__(self, other):
        return isinstance(other, Vector) and self.xs == other.xs
    def __bool__(self):
        return any(self.xs)
    def __abs__(self):
        return sum(a * a for a in self) ** 0.5
v = Vector(3, 4)
w = Vector(1, 2)
print(v + w, v * 2, 3 * w, abs(v), len(v), v[0], v[-1], 4 in v, list(v))
print(v == Vector(3, 4), v != w, bool(Vector(0, 0)), bool(v))
print(v[::-1], sum(Vector(1, 2, 3)), sorted(Vector(3, 1, 2)))
class Temperature:
    def __init__(self, c):
        self.c = c
    def __format__(self, spec):
        if spec.endswith("F"):
            return format(self.c * 9 / 5 + 32, spec[:-1] or "") + "°F"
        return format(self.c, spec) + "°C"
t = Temperature(21.5)
print(f"{t} {t:.2f} {t:.1F} {t:F}")
