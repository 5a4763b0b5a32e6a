# threat: sample every thread's frames with sys._current_frames to catch another session mid-cell
# expect: contained
# local: no
# note: in the local executor all sessions share one interpreter, so another session's running cell is visible here
import sys, time
target = "OTHER_SESSION_SECRET"
deadline = time.monotonic() + 1.0
found = False
while time.monotonic() < deadline and not found:
    for frame in sys._current_frames().values():
        while frame is not None:
            if target in frame.f_globals:
                found = True
            frame = frame.f_back
    time.sleep(0.001)
if found:
    print("LEAK: found in another thread's frame")
print("sampled")
