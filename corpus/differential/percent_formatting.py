# name: printf-style % formatting
print("%s has %d items costing %.2f" % ("cart", 3, 19.5))
print("%5d|%-5d|%05d|%+d" % (42, 42, 42, 42))
print("%x %X %o %#x %e %g" % (255, 255, 8, 255, 12345.678, 0.00001234))
print("%(name)s is %(age)d years old" % {"name": "Grace", "age": 85})
print("%r %s" % ("quoted", "plain"))
print("%10.3f|%-10.3f|" % (3.14159, 2.71828))
print("100%% done, %c%c" % (72, "i"))
print("%*d|%.*f" % (6, 7, 2, 1.23456))
try:
    print("%d" % "not a number")
except TypeError as exc:
    print("TypeError:", exc)
