# threat: replace sys.stdout with an in-memory buffer to capture other sessions' output
# expect: contained
# local: no
# note: local executor bug: the replaced stream is shared, so other sessions' prints land in this session's buffer
import io, sys, time
real = sys.stdout
spy = io.StringIO()
sys.stdout = spy
deadline = time.monotonic() + 1.0
while time.monotonic() < deadline:
    time.sleep(0.01)
sys.stdout = real
if '"n":' in spy.getvalue():
    print("LEAK: captured another session's output")
print("spied chars:", len(spy.getvalue()))
