"""Tools over run directories: reading their files (``files``), statistics over seeds (``stats``), what the
logs say (``analysis``), the HTML/PNG report (``report``) and a run's status (``status``). Nothing here
imports torch or the training runtime."""
