# name: type hints, NamedTuple and TypedDict
from typing import NamedTuple, TypedDict, Optional, get_type_hints
class Hit(NamedTuple):
    line: int
    text: str
    score: float = 1.0
class Config(TypedDict, total=False):
    chunk_size: int
    model: str
def best(hits: list[Hit], limit: Optional[int] = None) -> list[Hit]:
    ranked = sorted(hits, key=lambda h: (-h.score, h.line))
    return ranked[:limit] if limit else ranked
hits = [Hit(i, line[:20], len(line) / 100) for i, line in enumerate(context.splitlines()[:30]) if line]
print(best(hits, 3))
cfg: Config = {"chunk_size": 2000}
print(cfg, Config.__total__, sorted(Config.__annotations__))
print(get_type_hints(best))
print(Hit._field_defaults, Hit(1, "x")._asdict())
