# threat: search every object the garbage collector tracks for another session's namespace
# expect: contained
# local: no
# note: in the local executor all sessions share one heap, so gc.get_objects() reaches other sessions' globals
import gc
target = "OTHER_SESSION_SECRET"
hits = sum(1 for obj in gc.get_objects() if isinstance(obj, dict) and target in obj)
if hits:
    print("LEAK: found via gc.get_objects()")
print("scanned")
