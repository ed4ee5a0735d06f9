"""The Twilio caller stand-in lives in the package (``service.simcaller.twilio_caller``) because the
``callbridge demo`` and ``callbridge call`` commands use it too; tests import it from here."""

from service.simcaller.twilio_caller import *  # noqa: F403
from service.simcaller.twilio_caller import __all__  # noqa: F401
