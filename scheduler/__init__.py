"""The cronhive scheduler: one leader-elected process that fires every job's slots.

Run two or more (``cronhive scheduler`` = ``python -m cronhive.scheduler``); they share
MongoDB, one holds the leader lease (`scheduler.leadership`) and publishes each
due slot as a run onto RabbitMQ (`scheduler.dispatcher`, using the pure slot
logic of `cronhive.slots` and the overlap rules of `scheduler.overlap`); the
others stand by and take over when it dies. `scheduler.loop` ties these
together and decides how long to sleep. Nothing here imports API or worker code.
"""
