# threat: write a forged "done" frame on the control channel (fd 0), then spin: the host used to believe the frame and drop the cell's time limit
# expect: error:SystemError
# local: no
# note: fd 0 is the sandbox's control channel; locally it would be the test process's stdin
import json, os, struct
def frame(header, payload=b""):
    encoded = json.dumps(header).encode()
    return struct.pack("<II", len(encoded), len(payload)) + encoded + payload
os.write(0, frame({"op": "done", "error": None, "dropped": 0, "answer_len": 6, "final_var": None}, b"FORGED"))
print("LEAK: the forged frame was accepted and the cell went on")
while True:
    pass
