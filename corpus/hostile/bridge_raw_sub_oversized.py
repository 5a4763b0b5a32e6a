# threat: bypass llm_query's size checks with a raw sub-call frame whose prompt is past the host's cap
# expect: error:SystemError
# local: no
import json, os, struct
def frame(header, payload=b""):
    encoded = json.dumps(header).encode()
    return struct.pack("<II", len(encoded), len(payload)) + encoded + payload
size = 17 << 20
os.write(0, frame({"op": "sub", "kind": "llm", "model": None, "lens": [size]}, b"x" * size))
print("LEAK: the oversized prompt was accepted")
