from seamless_client.cli import main

main()
