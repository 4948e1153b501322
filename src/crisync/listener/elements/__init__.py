"""The Elements source: affected-since and deleted feeds, resync of one object, write-back."""
