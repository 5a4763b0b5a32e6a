# threat: write a file on the host filesystem
# expect: contained
# local: no
# host-absent: /tmp/rlm-conformance-hostile-write.txt
try:
    with open("/tmp/rlm-conformance-hostile-write.txt", "w") as f:
        f.write("written by a hostile snippet\n")
    print("write call returned")
except Exception as exc:
    print("blocked:", type(exc).__name__)
