# name: transcendental functions in the last digit (the C library's libm)
# differs: math.exp, math.sin, ... come from the platform's C library; the wasm sandbox uses wasi-libc's (musl) libm, which may round the last bit differently from the host's glibc (exp(1) is 2.7182818284590455 there, 2.718281828459045 with glibc)
import math
print(math.exp(1) == math.e, repr(math.exp(1)))
print(math.isclose(math.exp(1), math.e, rel_tol=1e-15))
print([round(f(0.5), 12) for f in (math.exp, math.sin, math.cos, math.tan, math.log, math.atan)])
