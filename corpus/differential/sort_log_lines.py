# name: sort log lines from the context by latency then timestamp
log = [line for line in context.splitlines() if line.startswith("[2024-")]
def latency(line):
    return int(line.rsplit("latency_ms=", 1)[1])
slowest = sorted(log, key=lambda l: (-latency(l), l))[:5]
fastest = sorted(log, key=lambda l: (latency(l), l))[:5]
print("slowest:")
print("\n".join(slowest))
print("fastest:")
print("\n".join(fastest))
chronological = sorted(log)
print(chronological[0])
print(chronological[-1])
