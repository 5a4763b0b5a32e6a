# name: abstract base classes
from abc import ABC, abstractmethod
class Chunker(ABC):
    @abstractmethod
    def chunks(self, text):
        ...
    def count(self, text):
        return sum(1 for _ in self.chunks(text))
class FixedChunker(Chunker):
    def __init__(self, size):
        self.size = size
    def chunks(self, text):
        for i in range(0, len(text), self.size):
            yield text[i:i + self.size]
class LineChunker(Chunker):
    def chunks(self, text):
        yield from text.splitlines()
try:
    Chunker()
except TypeError:
    print("cannot instantiate abstract class")
print(FixedChunker(5000).count(context), LineChunker().count(context))
print(isinstance(FixedChunker(1), Chunker), sorted(Chunker.__abstractmethods__))
