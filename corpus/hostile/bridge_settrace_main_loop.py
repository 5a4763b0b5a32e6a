# threat: install a trace function to rebind the driver main loop's locals (trace functions' f_locals edits are written back)
# expect: error:RuntimeError
# local: no
import sys
def tracer(frame, event, arg):
    frame.f_locals["write"] = print
    return tracer
sys.settrace(tracer)
print("LEAK: tracing was installed")
