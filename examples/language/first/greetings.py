from flowcraft_celery import NodeContext, node


@node("greet")                       # the name blueprints use in "uses"
def greet(ctx: NodeContext) -> str:
    return f"hello {ctx.context.get('name')}"


@node("shout")
def shout(ctx: NodeContext) -> str:
    return str(ctx.input).upper()    # ctx.input: what the previous node handed over
