# examples/noop.py: the cheapest python= handler there is, for measuring
# what the Python path itself costs (scripts/bench --fsevent-arg
# python=examples/noop.py).  It allows every write at once.

def before_write_file(params):
    return 0
