import Config

# Defaults for every `Specter.init/1` of this application; options given to `init/1` win.
# See `Specter.Config` for every key.

import_config "#{config_env()}.exs"
