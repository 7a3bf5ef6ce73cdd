"""mmie common pieces: config, offline model zoo, synthetic data. Never imports deepspeed, ray or mlflow at
module level. Importing it first sets the variables that keep every library off the network."""
from common import offline as _offline

_offline.apply()
