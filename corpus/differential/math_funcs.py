# name: math module functions
import math
print(math.sqrt(2), math.isqrt(10**12 + 7), math.floor(-2.5), math.ceil(-2.5), math.trunc(-2.5))
print(math.gcd(48, 180), math.lcm(4, 6, 10), math.comb(52, 5), math.perm(10, 3), math.factorial(20))
print(math.log(1000, 10), math.log2(1024), math.log10(0.001), math.isclose(math.exp(1), math.e, rel_tol=1e-15))
print(math.isclose(0.1 + 0.2, 0.3), 0.1 + 0.2 == 0.3, math.isclose(1.0, 1.001, rel_tol=1e-2))
print(math.fsum([0.1] * 10), sum([0.5] * 10), math.prod([1, 2, 3, 4]))
print(f"{math.pi:.10f} {math.tau:.4f} {math.degrees(math.pi / 3):.6f} {math.radians(180):.6f}")
print(math.hypot(3, 4), math.dist((0, 0), (6, 8)), math.copysign(3, -0.0))
print(math.inf > 10**308, math.isnan(math.nan), math.isinf(-math.inf), math.nan == math.nan)
print(round(2.5), round(3.5), round(-0.5), round(1.2345, 2), round(1234, -2))
print(divmod(17, 5), divmod(-17, 5), -17 // 5, -17 % 5, pow(3, 200, 1000), 2 ** 100)
print(math.modf(3.75), math.frexp(8.0), math.ldexp(0.5, 4))
