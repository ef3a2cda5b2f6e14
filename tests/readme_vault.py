# ruff: noqa
# fmt: off
# The README's "Encrypted payloads" example, exactly as printed there. Run as a script it makes a
# keyfile, runs a payment with its payloads compressed and encrypted, then reads it without the key.
import asyncio
import loom


@loom.activity
async def charge(card: str, amount: int) -> str:
    return f"receipt for {amount} on {card[-4:]}"


@loom.workflow(name="Payment")
class Payment(loom.Workflow[dict, dict]):
    @loom.step
    async def pay(self, ctx):
        await ctx.state.set("receipt", await ctx.activity(charge, ctx.input["card"], 42))


async def main():
    # The keyfile: one "KEY_ID BASE64_KEY" a line, the first writes, the others still read.
    with open("keys", "w") as f:
        f.write(f"k1 {loom.AesGcmCodec.generate_key()}\n")
    codec = loom.CodecChain(loom.CompressionCodec(), loom.AesGcmCodec.from_keyfile("keys"))
    async with loom.Database("sqlite:///vault.db", codec=codec) as db:
        await db.migrate_up()
        handle = await db.start_workflow(
            Payment, workflow_input={"card": "4111111111111111"}, workflow_id="pay-1"
        )
        while await loom.run_once(db):
            pass
        print(await handle.result())                  # decoded: the receipt
    async with loom.Database("sqlite:///vault.db") as keyless:
        print(await keyless.get_workflow(handle.workflow_id).status())  # COMPLETED: no payload
        try:
            await keyless.get_workflow(handle.workflow_id).result()
        except loom.PayloadDecodeError as exc:
            print(type(exc).__name__, exc.key)    # PayloadDecodeError k1
    print(b"4111111111111111" in open("vault.db", "rb").read())   # False

if __name__ == "__main__":
    asyncio.run(main())
