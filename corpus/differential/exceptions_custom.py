# name: custom exceptions, raise from, __cause__ and __context__
class PipelineError(Exception):
    pass
class ChunkError(PipelineError):
    def __init__(self, index, reason):
        super().__init__(f"chunk {index}: {reason}")
        self.index = index
def parse(chunk, index):
    try:
        return int(chunk)
    except ValueError as exc:
        raise ChunkError(index, "not a number") from exc
results = []
for i, chunk in enumerate(["1", "2", "x", "4"]):
    try:
        results.append(parse(chunk, i))
    except PipelineError as exc:
        print("error:", exc, "| index", exc.index, "| cause:", type(exc.__cause__).__name__, exc.__cause__)
print(results)
try:
    try:
        {}["missing"]
    except KeyError:
        raise RuntimeError("while handling")
except RuntimeError as exc:
    print(type(exc.__context__).__name__, exc.__context__, exc.__suppress_context__)
try:
    raise ValueError("hidden") from None
except ValueError as exc:
    print(exc.__cause__, exc.__suppress_context__)
err = ChunkError(3, "boom")
print(repr(err), err.args, isinstance(err, Exception))
