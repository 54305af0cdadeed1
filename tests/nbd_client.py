# tests/nbd_client.py: what the Python parts of the shell tests share
# about talking to the server under test with libnbd.
import errno
import nbd


def fails(err, fn, *args):
    """FN(*ARGS) must fail at the client with errno ERR."""
    try:
        fn(*args)
    except nbd.Error as e:
        print("failed as expected:", e)
        assert e.errnum == err, ("errno", e.errnum,
                                 errno.errorcode.get(e.errnum), err)
        return
    raise AssertionError("%s succeeded, expected %s" %
                         (fn.__name__, errno.errorcode[err]))
