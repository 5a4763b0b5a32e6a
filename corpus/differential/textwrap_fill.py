# name: textwrap wrap, fill, shorten, dedent and indent
import textwrap
paragraph = context.split("\n\n")[1].split("\n")[0]
print(textwrap.fill(paragraph[:400], width=50))
print(textwrap.wrap(paragraph[:120], width=30))
print(textwrap.shorten(paragraph, width=60, placeholder=" [...]"))
code = """
    def f():
        return 1
"""
print(textwrap.dedent(code))
print(textwrap.indent("line one\nline two\n\nline four", "> "))
print(textwrap.fill("a " * 30, width=20, initial_indent="* ", subsequent_indent="  "))
print(textwrap.wrap("supercalifragilisticexpialidocious word", width=10))
print(textwrap.wrap("supercalifragilisticexpialidocious", width=10, break_long_words=False))
