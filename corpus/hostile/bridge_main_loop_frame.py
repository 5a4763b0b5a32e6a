# threat: walk up to the driver's main-loop frame and rebind its locals through f_locals, then check the next cell still runs honestly
# expect: contained
# local: no
import sys
frame = sys._getframe()
while frame.f_back is not None:
    frame = frame.f_back
frame.f_locals["write"] = print
frame.f_locals["run_job"] = print
print("tried to rebind the main loop")
# %%
print("next cell ran")
