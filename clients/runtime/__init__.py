"""The hand-written runtime of the generated client, copied verbatim into nurturehub_client.

These modules import each other relatively and never the generated ones, so they type-check
here, in the main distribution, exactly as they will run in the client package.
"""
