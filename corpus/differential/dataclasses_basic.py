# name: dataclasses with defaults, ordering, frozen, asdict and replace
from dataclasses import dataclass, field, asdict, replace, fields, FrozenInstanceError
@dataclass
class Chunk:
    index: int
    text: str
    tags: list = field(default_factory=list)
    score: float = 0.0
    def preview(self, n=20):
        return self.text[:n].replace("\n", " ")
@dataclass(order=True, frozen=True)
class Span:
    start: int
    end: int
chunks = [Chunk(i, context[i * 1000:(i + 1) * 1000]) for i in range(3)]
chunks[1].tags.append("middle")
print(chunks[0].preview(), "|", chunks[1])
print(asdict(Chunk(9, "tiny", ["t"], 0.5)))
print(replace(chunks[2], text="replaced", score=1.0))
print([f.name for f in fields(Chunk)])
spans = [Span(5, 9), Span(1, 4), Span(5, 6)]
print(sorted(spans), Span(1, 2) == Span(1, 2), Span(1, 2) < Span(1, 3))
try:
    spans[0].start = 0
except FrozenInstanceError:
    print("frozen")
print(len({Span(1, 2), Span(1, 2), Span(2, 3)}))
