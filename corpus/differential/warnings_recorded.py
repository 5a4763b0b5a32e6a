# name: warnings captured with catch_warnings
import warnings
def old_api(x):
    warnings.warn("old_api is deprecated", DeprecationWarning, stacklevel=2)
    return x * 2
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    values = [old_api(i) for i in range(3)]
    warnings.warn("a user warning")
print(values, len(caught))
for w in caught:
    print(w.category.__name__, str(w.message), w.filename, w.lineno)
