# name: classes, inheritance, super() and __repr__
class Document:
    count = 0
    def __init__(self, title, text):
        self.title = title
        self.text = text
        Document.count += 1
    def words(self):
        return len(self.text.split())
    def summary(self):
        return f"{self.title}: {self.words()} words"
    def __repr__(self):
        return f"{type(self).__name__}(title={self.title!r})"
    def __str__(self):
        return self.summary()
class Chapter(Document):
    def __init__(self, title, text, number):
        super().__init__(title, text)
        self.number = number
    def summary(self):
        return f"Ch.{self.number} " + super().summary()
class Appendix(Chapter):
    def summary(self):
        return "[appendix] " + super().summary()
chapters = []
for block in context.split("## ")[1:4]:
    heading, _, body = block.partition("\n")
    number = int(heading.split()[1].rstrip(":"))
    chapters.append(Chapter(heading.split(": ", 1)[1], body, number))
for ch in chapters:
    print(repr(ch))
    print(ch)
extra = Appendix("Notes", "short text here", 99)
print(extra, [c.__name__ for c in Appendix.__mro__])
print(Document.count, isinstance(extra, Document), issubclass(Chapter, Appendix))
