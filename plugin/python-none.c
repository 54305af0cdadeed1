/* plugin/python-none.c: python= when the plugin was built without
 * Python (configure found no python3-embed): a clear error.
 */
#include <config.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include "python.h"

static int
none (const char *what)
{
  nbdkit_error ("%s: this nbdkit-fsevent was built without Python handlers "
                "(configure found no python3-embed: install python3-dev "
                "and rebuild)", what);
  return -1;
}

int
python_load (const char *path)
{
  return none ("python=");
}

int
python_config (const char *key, const char *value)
{
  return none ("python.KEY=");
}

int
python_set_timeout (const char *seconds)
{
  return none ("python-timeout=");
}

int
python_after_fork (void)
{
  return 0;
}
