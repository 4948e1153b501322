"""The secrets the test simulators accept: canaries, so a leak into a log or a message is found."""

ELEMENTS_PASSWORD = "elements-canary-3f9a"
PURE_API_KEY = "pure-canary-71c2"
