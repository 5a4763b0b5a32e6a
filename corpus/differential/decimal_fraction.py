# name: Decimal and Fraction arithmetic
from decimal import Decimal, ROUND_HALF_UP, getcontext
from fractions import Fraction
print(Decimal("0.1") + Decimal("0.2"), Decimal(0.1))
print(Decimal("2.675").quantize(Decimal("0.01"), rounding=ROUND_HALF_UP), round(2.675, 2))
print(Decimal(1) / Decimal(7), getcontext().prec)
print(sum(Decimal("19.99") for _ in range(3)), Decimal("10") ** -2)
print(Fraction(3, 4) + Fraction(1, 6), Fraction("0.125"), Fraction(0.5), Fraction(22, 7).limit_denominator(5))
print(float(Fraction(1, 3)), Fraction(1, 3).numerator, Fraction(10, 4))
print(sorted([Fraction(1, 2), Fraction(1, 3), Decimal("0.4")], key=float))
