# name: a cell with a syntax error fails before running anything
# compare: error-kind
print("this line never runs")
def broken(:
    pass
