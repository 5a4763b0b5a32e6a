# name: f-strings with format specs
x = 1234567.891
n = 255
p = 0.4567
name = "Ada"
print(f"[{name:>10}] [{name:<10}] [{name:^10}] [{name:*^11}]")
print(f"{x:,.2f} {x:_.1f} {x:012.3f} {x:e} {x:.3g} {x:+.0f}")
print(f"{n:b} {n:o} {n:x} {n:X} {n:#x} {n:#010b} {n:,}")
print(f"{p:.1%} {p:.3f} {-p:.2f} {p: .2f}")
print(f"{name!r} {name!s} {name!a}")
value = 3
print(f"{value=} {value * 2 = }")
width, precision = 12, 4
print(f"[{x:{width}.{precision}f}]")
print(f"{'nested':>{width}}|")
print(f"{3.0:.0f} {2.5:.0f} {0.125:.2f} {1e16:.1f} {float('inf')} {float('nan')}")
print(f"{12:>05} {-12:05} {12:<5}|")
rows = [("apples", 3, 1.5), ("kiwis", 12, 0.25), ("dragonfruit", 1, 4.75)]
for item, qty, price in rows:
    print(f"{item:<12}|{qty:>4}|{price:>8.2f}|{qty * price:>9.3f}")
