"""`netkit lab demo`: an emulated data centre, driven through the API, broken on purpose, reported."""
