# name: ExceptionGroup and except*
def validate(values):
    errors = []
    for v in values:
        if not isinstance(v, int):
            errors.append(TypeError(f"not an int: {v!r}"))
        elif v < 0:
            errors.append(ValueError(f"negative: {v}"))
    if errors:
        raise ExceptionGroup("validation failed", errors)
try:
    validate([1, -2, "x", -5, 3.5])
except* ValueError as group:
    print("values:", [str(e) for e in group.exceptions])
except* TypeError as group:
    print("types:", [str(e) for e in group.exceptions])
eg = ExceptionGroup("outer", [KeyError("k"), ExceptionGroup("inner", [ValueError("v")])])
print(eg, len(eg.exceptions))
match, rest = eg.split(ValueError)
print(match, rest)
