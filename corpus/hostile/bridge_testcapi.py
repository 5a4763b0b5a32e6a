# threat: import CPython's test-only C module, which exposes raw memory and interpreter internals
# expect: error:ImportError|ModuleNotFoundError
# local: no
import _testcapi
print("LEAK: _testcapi imported")
