"""Controller replicas: ``fabric serve --store postgresql://... --replica NAME``.

Every replica serves the API; the one holding the lease (fabric.controller.leader) runs the
fabric controller, FFE and the load balancers against the fenced PostgreSQL store, and the
others forward every request to it (fabric.replica.front). See fabric.replica.run.
"""
