# threat: replace a commonly used module in sys.modules so other sessions import a fake
# expect: contained
# local: no
# note: the local executor shares sys.modules between sessions by design (one interpreter)
import sys, types
fake = types.ModuleType("json")
fake.dumps = lambda *a, **k: "forged"
fake.loads = lambda *a, **k: "forged"
sys.modules["json"] = fake
print("patched")
